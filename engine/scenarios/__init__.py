"""Built-in scenarios (TOML data next to this file) and the loader for users' own."""

from engine.scenarios.loader import (
    Scenario,
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_scenario,
)

__all__ = ["Scenario", "ScenarioError", "builtin_names", "load_scenario", "parse_scenario"]
