"""Real hypervisors behind the model's ioctl surface, for comparing the model with a kernel."""
