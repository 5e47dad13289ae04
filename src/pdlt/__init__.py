"""pdlt: the effective theory of deep neural networks (Roberts & Yaida), computable.

Theory to order 1/n and ensembles of real networks, with the same field names, side by side.

>>> import pdlt
>>> pdlt.criticality("tanh").universality_class
'K*=0'
"""

from . import information, torch
from .activations import Activation, activation, available_activations, register_activation
from .compare import Comparison, compare
from .complexity import aspect_ratio, count_couplings, six_point_vertex
from .empirical.ensemble import Ensemble
from .empirical.estimators import measure
from .empirical.training import TrainingResult, train
from .information import information_curve, optimal_aspect_ratio, recommend_architectures
from .learning import (
    Prediction,
    bayes_predict,
    evidence,
    evidence_scan,
    gd_predict,
    kernel_prediction,
    posterior,
)
from .network import Inputs, Network, xi_equivalent
from .results import Flow, load
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
    "xi_equivalent",
    "Prediction",
    "TrainingResult",
    "activation",
    "aspect_ratio",
    "available_activations",
    "available_fields",
    "bayes_predict",
    "compare",
    "count_couplings",
    "criticality",
    "evidence",
    "evidence_scan",
    "flow",
    "fluctuation_ratios",
    "gd_predict",
    "information",
    "information_curve",
    "load",
    "kernel_prediction",
    "measure",
    "optimal_aspect_ratio",
    "posterior",
    "recommend_architectures",
    "register_activation",
    "six_point_vertex",
    "torch",
    "train",
]
