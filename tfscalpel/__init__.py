"""tfscalpel: hardware-aware (Scalpel) pruning for Keras 3.

The flow: ``prune`` a trained model, ``fit`` it with ``UpdatePruningStep``, ``strip`` it, then
export it with ``tflite_export``. See README.md for a tour.
"""
from tfscalpel.callbacks import PruningSummaries, SparsityHistory, UpdatePruningStep
from tfscalpel.distill import Distiller
from tfscalpel.distributed import distributed_fit
from tfscalpel.gate_training import GateTraining, gate_optimizer
from tfscalpel.gates import MaskLayer, mask_layers
from tfscalpel.importance import L1, L2, RMS, Importance, Magnitude, MaxAbs, MeanAbs, get_importance
from tfscalpel import layer_handlers
from tfscalpel.layer_handlers import register_layer
from tfscalpel.layers import (
    GroupPrunedConv1D,
    GroupPrunedConv2D,
    GroupPrunedDense,
    GroupPrunedDepthwiseConv2D,
    PrunableMixin,
    PrunedLayerNormalization,
    pruned_layers,
)
from tfscalpel.conv_layers import (
    GroupPrunedConv2DTranspose,
    GroupPrunedConv3D,
    GroupPrunedSeparableConv2D,
)
from tfscalpel.attention_layers import (
    GatedMultiHeadAttention,
    GroupPrunedEinsumDense,
    GroupPrunedEmbedding,
    GroupPrunedMultiHeadAttention,
)
from tfscalpel.custom_layers import PrunedWeights
from tfscalpel.mask_update import update_pruning
from tfscalpel.nm import check_nm, prune_2_4
from tfscalpel.patterns import (
    GroupPattern,
    NMPattern,
    SparsityPattern,
    UnstructuredPattern,
    get_pattern,
)
from tfscalpel.planner import LayerPlan, Plan, plan
from tfscalpel.budget import Budget, BudgetError
from tfscalpel.prune_model import prune
from tfscalpel.saliency import OBD, Taylor, calibrate, unit_saliency, weight_saliency
from tfscalpel.schedules import (
    ConstantSparsity,
    IterativePruning,
    PolynomialDecay,
    PruningSchedule,
    StagedThreshold,
    get_schedule,
)
from tfscalpel.strip import LayerReport, StripReport, strip
from tfscalpel.tfmot_compat import prune_low_magnitude, prune_scope, strip_pruning
from tfscalpel.targets import HardwareTarget, get_target, known_targets, register_target
from tfscalpel import energy
from tfscalpel import report  # noqa: E402  (plots; matplotlib is imported when one is drawn)

__version__ = "0.1.0"
