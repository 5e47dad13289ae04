"""pdlt: the effective theory of deep neural networks (Roberts & Yaida), computable.

Theory to order 1/n and ensembles of real networks, with the same field names, side by side.

>>> import pdlt
>>> pdlt.criticality("tanh").universality_class
'K*=0'
"""

from .activations import Activation, activation, available_activations, register_activation
from .compare import Comparison, compare
from .empirical.ensemble import Ensemble
from .empirical.estimators import measure
from .network import Inputs, Network
from .results import Flow
from .theory.criticality import criticality
from .theory.flow import available_fields, flow, fluctuation_ratios

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "Comparison",
    "Ensemble",
    "Flow",
    "Inputs",
    "Network",
    "activation",
    "available_activations",
    "available_fields",
    "compare",
    "criticality",
    "flow",
    "fluctuation_ratios",
    "measure",
    "register_activation",
]
