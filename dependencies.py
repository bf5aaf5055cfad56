"""One line instead of a traceback when an entry script runs in a Python without this project's
dependencies (the system's python3, .venv not activated):

    error: this project's dependencies (torch, torchvision, hydra ...) are not installed for /usr/bin/python3:
    run 'make install', then use .venv/bin/python (or: source .venv/bin/activate)      [on one line]

Every entry script imports this module first (`import dependencies`); it imports nothing but the standard
library and only looks whether the packages can be found (importlib.util.find_spec), importing none of
them. Exit status 2, as every other refusal of the project.
"""
import importlib.util
import sys

# The top-level modules of requirements.txt's runtime packages (hydra-core -> hydra).
RUNTIME_MODULES = ("torch", "torchvision", "hydra", "omegaconf", "numpy", "matplotlib", "tqdm")


def missing_modules(modules=RUNTIME_MODULES) -> list:
    """The modules of `modules` that this interpreter cannot import."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def refuse_without_dependencies() -> None:
    """Print one `error:` line and exit with status 2 when a runtime dependency is missing."""
    missing = missing_modules()
    if missing:
        named = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        print(f"error: this project's dependencies ({named}) are not installed for "
              f"{sys.executable or 'this Python'}: run 'make install', then use .venv/bin/python "
              "(or: source .venv/bin/activate)", file=sys.stderr, flush=True)
        raise SystemExit(2)


refuse_without_dependencies()
