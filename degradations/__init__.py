"""UDC and low-light degradation models: pure tensor code, batched, CPU and CUDA.

- :mod:`degradations.functional`: the models as functions (gains, PSF blur, scatter, noise, colour, low light).
- :mod:`degradations.psf`: display PSFs from Fraunhofer diffraction, or measured ones.
- :mod:`degradations.modules`: ``nn.Module`` classes with replayable random parameters.
- :mod:`degradations.recipe`: recipe files and the shipped presets (``toled``, ``poled``, ``lowlight``).

The recipe layer imports without torch (the CLI lists presets without it); the modules load on first use.
"""

from degradations.recipe import Recipe, RecipeError, load_recipe, parse_recipe_override, preset_names

_MODULES = ("LowLightDegradation", "UDCDegradation", "build_degradation")


def __getattr__(name: str):
    if name in _MODULES:
        from degradations import modules

        return getattr(modules, name)
    raise AttributeError(f"module 'degradations' has no attribute '{name}'")


__all__ = [*_MODULES, "Recipe", "RecipeError", "load_recipe", "parse_recipe_override", "preset_names"]
