"""UDC and low-light degradation models: pure tensor code, batched, CPU and CUDA.

- :mod:`degradations.functional`: the models as functions (gains, PSF blur, noise, colour, low light).
- :mod:`degradations.psf`: display PSFs from Fraunhofer diffraction, or measured ones.
- :mod:`degradations.modules`: ``nn.Module`` classes with replayable random parameters.
- :mod:`degradations.recipe`: recipe files and the shipped presets (``toled``, ``poled``, ``lowlight``).
"""

from degradations.modules import LowLightDegradation, UDCDegradation, build_degradation
from degradations.recipe import Recipe, RecipeError, load_recipe, parse_recipe_override, preset_names

__all__ = [
    "LowLightDegradation",
    "Recipe",
    "RecipeError",
    "UDCDegradation",
    "build_degradation",
    "load_recipe",
    "parse_recipe_override",
    "preset_names",
]
