"""Learning at infinite width: Bayesian inference (ch. 6) and kernel learning (ch. 7, 10).

* :mod:`pdlt.learning.bayes` -- posterior (6.57), (6.64), evidence (6.34), model comparison.
* :mod:`pdlt.learning.kernel_learning` -- GD / Newton at infinite width, fully-trained
  mean and covariance (10.40)-(10.41), generalization (§10.3), linear models (§10.4).
* :mod:`pdlt.learning.linalg` -- the shared, regularized kernel solves.
* :mod:`pdlt.learning.data` -- a small real data set (diabetes, via scikit-learn).
"""

from .bayes import (
    Prediction,
    bayes_factor,
    bayes_predict,
    block_inverse,
    evidence,
    evidence_scan,
    gamma_targets,
    log_evidence,
    log_evidence_two_inputs,
    posterior,
)
from .bayes_finite_width import (
    FiniteWidthPrediction,
    bayes_predict_finite_width,
    bayes_representation_update,
    finite_width_posterior,
    hebbian_conditional_variance,
    representation_update,
)
from .data import Dataset, diabetes
from .kernel_learning import (
    bayes_learning_rates,
    bias_variance,
    error_factor,
    gd_operator,
    gd_predict,
    infinite_width_step,
    infinite_width_training,
    kernel_machine,
    kernel_prediction,
    linear_model_fit,
    newton_step,
    one_train_one_test,
    star_polation,
)
from .linalg import ConditioningWarning, SPDSolver
from .nonlinear import (
    QuadraticFit,
    effective_features,
    effective_kernel,
    meta_kernel,
    nearly_kernel_predict,
    nearly_kernel_predict_gd,
    quadratic_model_fit_direct,
    quadratic_model_predict,
    trained_kernel,
    trained_kernel_predict,
)

__all__ = [
    "ConditioningWarning",
    "Dataset",
    "Prediction",
    "SPDSolver",
    "bayes_factor",
    "bayes_learning_rates",
    "bayes_predict",
    "bias_variance",
    "diabetes",
    "block_inverse",
    "error_factor",
    "evidence",
    "evidence_scan",
    "gamma_targets",
    "gd_operator",
    "gd_predict",
    "infinite_width_step",
    "infinite_width_training",
    "kernel_machine",
    "kernel_prediction",
    "linear_model_fit",
    "log_evidence",
    "log_evidence_two_inputs",
    "newton_step",
    "one_train_one_test",
    "posterior",
    "star_polation",
    "QuadraticFit",
    "effective_features",
    "effective_kernel",
    "meta_kernel",
    "nearly_kernel_predict",
    "nearly_kernel_predict_gd",
    "quadratic_model_fit_direct",
    "quadratic_model_predict",
    "trained_kernel",
    "trained_kernel_predict",
    "FiniteWidthPrediction",
    "bayes_predict_finite_width",
    "bayes_representation_update",
    "finite_width_posterior",
    "hebbian_conditional_variance",
    "representation_update",
]
