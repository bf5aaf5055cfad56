"""A Hydra launcher plugin of this repository (Hydra instantiates launchers only from hydra_plugins.*)."""
