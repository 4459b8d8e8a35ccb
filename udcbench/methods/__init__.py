"""The registered methods: the registry (:mod:`.base`), the ResNet-18 methods (:mod:`.resnet`), POSTER++
(:mod:`.poster`), LRDif and its variants (:mod:`.lrdif`) and a tiny test model (:mod:`.testing`); importing the
package registers them all."""

# isort: off
# Registration, in the order `udcbench methods` lists them.
from udcbench.methods import resnet, poster, lrdif, testing  # noqa: F401
# isort: on
from udcbench.methods.base import (
    MethodSpec,
    PrepareContext,
    Sweep,
    create_method,
    get_method,
    is_first_stage,
    method_names,
    register_method,
    study_methods,
    swept_method,
)
from udcbench.methods.lrdif import LRDIF_ARGS
from udcbench.methods.resnet import BASELINES

__all__ = ["BASELINES", "LRDIF_ARGS", "MethodSpec", "PrepareContext", "Sweep", "create_method", "get_method",
           "is_first_stage", "method_names", "register_method", "study_methods", "swept_method"]
