"""Every case of the hostile-input report (issue 12), each ending in one line of error that
names the option or file:line, or in a correct result. In process (engine.cli.main catches
what it must; anything else would fail the test as a traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
from engine import limits
from engine.bench.load_bench import many_regions_scenario
from engine.compare_cmd import capped_jobs
from engine.scenarios import ScenarioError, parse_scenario
from engine.scenarios.loader import builtin_dir

from .helpers import refused

SPLIT = (builtin_dir() / "split.toml").read_text()


# --- bad command lines ---------------------------------------------------------------------

BAD_ARGS = {
    "maxphyaddr=abc": (["--host", "maxphyaddr=abc"], "--host maxphyaddr must be an integer"),
    "maxphyaddr=1e3": (["--host", "maxphyaddr=1e3"], "--host maxphyaddr must be an integer"),
    "maxphyaddr=99": (["--host", "maxphyaddr=99"], "--host maxphyaddr must be 32..57"),
    "task_size_max=abc": (["--host", "task_size_max=abc"], "--host task_size_max must be an integer"),
    "task_size_max=-1": (["--host", "task_size_max=-1"], "--host task_size_max must be"),
    "nr_memslots=1": (["--host", "nr_memslots=1"], "needs 2 memslots in as_id 0"),
    "nr_memslots=0": (["--host", "nr_memslots=0"], "--host nr_memslots must be 1..32764"),
    "mmio_caching=maybe": (["--host", "mmio_caching=maybe"], "--host mmio_caching must be true or false"),
    "readonly_mem=2": (["--host", "readonly_mem=2"], "--host readonly_mem must be true or false"),
    "nr_cpus=-5": (["--host", "nr_cpus=-5"], "--host nr_cpus must be 1..1024"),
    "fetch_noslot=maybe": (["--host", "fetch_noslot=maybe"], "--host fetch_noslot must be"),
    "unknown host option": (["--host", "colour=3"], "unknown host option 'colour'"),
    "reader-stall vcpu 99": (["--fault", "reader-stall=vcpu=99"], "vcpu 99 does not exist"),
    "weeds vcpu -1": (["--fault", "weeds=vcpu=-1"], "fault weeds: vcpu must be 0..1023"),
    "weeds gpa -1": (["--fault", "weeds=gpa=-1"], "fault weeds: gpa must be 0.."),
    "weeds gpa 2^200": (["--fault", f"weeds=gpa={1 << 200}"], "fault weeds: gpa must be 0.."),
    "weeds vcpu 2 of 2": (["--fault", "weeds=vcpu=2"], "vcpu 2 does not exist"),
    "gp-delay 2 hours": (["--fault", "gp-delay=delay=7200s"], "fault gp-delay: duration must be"),
    "times 2^40": (["--fault", f"race=times={1 << 40}"], "fault race: times must be"),
    "vcpus 100000": (["--vcpus", "100000"], "--vcpus: must be 1..1024"),
    "seed negative": (["--seed", "-1"], "--seed: must be 0.."),
    "seed 2^70": (["--seed", str(1 << 70)], "--seed: must be 0.."),
    "duration 2 hours": (["--duration", "7200s"], "--duration: must be 1..3600000000000 ns"),
    "duration of 400 digits": (["--duration", "9" * 400 + "s"], "far too long"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_ARGS))
def test_bad_run_options(case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv, fragment = BAD_ARGS[case]
    line = refused(capsys, "run", "--log", str(tmp_path / "x.jsonl"), *argv)
    assert fragment in line
    assert not (tmp_path / "x.jsonl").exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/tmp", "cannot write the session log: Is a directory"),
        ("/proc/nope/x.jsonl", "cannot write the session log"),
        ("/dev/full", "cannot write the session log: No space left on device"),
    ],
)
def test_a_log_that_cannot_be_written(
    path: str, fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = refused(capsys, "run", "--duration", "100us", "--log", path)
    assert path in line
    assert fragment in line


def test_an_unwritable_sessions_folder(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLOTLAB_SESSIONS", "/proc/self/nope")
    assert "cannot write the session log" in refused(capsys, "run", "--duration", "100us")


def test_bench_only_names_what_exists(capsys: pytest.CaptureFixture[str]) -> None:
    assert "--only nope: no such group" in refused(capsys, "bench", "--only", "nope")
    assert "no measure of that name" in refused(capsys, "bench", "--quick", "--only", "load.x")


def test_compare_jobs_are_capped_at_the_cpus_unless_forced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cpus = limits.cpus()
    assert capped_jobs(64 + cpus, force=False) == cpus
    assert f"capped at {cpus}" in capsys.readouterr().err
    assert capped_jobs(64 + cpus, force=True) == 64 + cpus
    assert capped_jobs(1, force=False) == 1
    with pytest.raises(limits.LimitError, match=r"--jobs must be 1\.\.256"):
        capped_jobs(500, force=True)


def test_open_vm_refuses_a_boolean_for_a_number() -> None:
    with pytest.raises(ValueError, match="nr_memslots must be an integer, not True"):
        engine.open_vm("model", nr_memslots=True)
    with pytest.raises(ValueError, match="readonly_mem must be true or false, not 1"):
        engine.open_vm("model", readonly_mem=1)


# --- bad scenario files --------------------------------------------------------------------


def test_invalid_utf8_names_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    data = SPLIT.encode().replace(b"BIOS shadow", b"BIOS \xffshadow", 1)
    no = next(i for i, line in enumerate(SPLIT.splitlines(), 1) if "BIOS shadow" in line)
    path.write_bytes(data)
    assert f"{path}:{no}: not UTF-8" in refused(capsys, "run", "--scenario", str(path))
    faults = tmp_path / "faults.txt"
    faults.write_bytes(b"10us race\n20us \xfe\xferace\n")
    assert f"{faults}:2: not UTF-8" in refused(capsys, "run", "--faults", str(faults))


@pytest.mark.heavy
def test_forty_thousand_regions_load_and_their_errors_name_the_line() -> None:
    """Correct at scale, counted (how fast is `slotlab bench --only load`'s)."""
    n = 40_000
    sc = parse_scenario(many_regions_scenario(n), "many.toml")
    assert len(sc.layouts["all"].regions) == n
    assert [r.gpa for _, r in sc.layouts["all"].regions][-2:] == [
        (n - 2) * 0x2000,
        (n - 1) * 0x2000,
    ]
    text = many_regions_scenario(n, bad_at=n - 1)
    lines = text.splitlines()
    want = next(no for no, line in enumerate(lines, 1) if f'"r{n - 1}"' in line)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(text, "many.toml")
    assert err.value.line == want
    assert f"region {n - 1}" in err.value.reason
