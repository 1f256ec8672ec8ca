"""Knowledge distillation in Keras: a small student learns from a frozen teacher.

The loss is a weighted list of terms, each an object with ``compute_loss``
(:mod:`~edgeqd.distillation.losses`: hard labels, soft targets at temperature T with
the T² factor, intermediate features, attention maps; :mod:`~edgeqd.distillation.dkd`:
decoupled KD); :mod:`~edgeqd.distillation.recipes` holds the ``--recipe`` presets
(consistent teaching with :mod:`~edgeqd.distillation.augment`, cosine schedules from
:mod:`~edgeqd.distillation.schedules`); the
:class:`~edgeqd.distillation.distiller.Distiller` trains the student with them;
:func:`~edgeqd.distillation.training.distill` is one whole run (``edgeqd distill``);
:mod:`~edgeqd.distillation.students` holds the built-in student families.
"""

# One run: settings in, a saved student and its report out.
from edgeqd.distillation.training import REPORT_SUFFIX, distill, report_path, split_validation
from edgeqd.distillation.checkpoints import checkpoint_folder

# The model that trains a student against a frozen teacher.
from edgeqd.distillation.distiller import Distiller

# The loss terms, the standard recipe, and the math for other training loops.
from edgeqd.distillation.losses import (AttentionTransfer, DistillationLoss, FeatureDistillation, HardLabels,
                                        LogitsDistillation, attention_loss, attention_map, distillation_loss,
                                        distillation_terms, feature_loss, hard_label_loss, kd_loss, standard_losses)

# Decoupled KD: the teacher term split into target and non-target parts.
from edgeqd.distillation.dkd import DecoupledKD, dkd_loss, dkd_terms

# Recipes: named presets, the consistent views they train on, the learning-rate schedule.
from edgeqd.distillation.recipes import RECIPES, Augmentation, DataKind, Recipe, ResolvedRecipe, resolve
from edgeqd.distillation.augment import ConsistentView
from edgeqd.distillation.schedules import WarmupCosine

# Teacher and student as distillation needs them: logits, named layers, checks.
from edgeqd.distillation.checks import check_compatible, check_settings, check_teacher_outputs_logits
from edgeqd.distillation.layers import find_layer, logits_model, parse_layer_pairs

__all__ = [
    "distill", "report_path", "checkpoint_folder", "split_validation", "REPORT_SUFFIX",
    "Distiller",
    "DistillationLoss", "LogitsDistillation", "HardLabels", "FeatureDistillation", "AttentionTransfer",
    "standard_losses", "kd_loss", "hard_label_loss", "distillation_terms", "distillation_loss", "feature_loss",
    "attention_map", "attention_loss",
    "DecoupledKD", "dkd_loss", "dkd_terms",
    "RECIPES", "Recipe", "ResolvedRecipe", "resolve", "Augmentation", "DataKind", "ConsistentView", "WarmupCosine",
    "logits_model", "find_layer", "parse_layer_pairs", "check_settings", "check_compatible",
    "check_teacher_outputs_logits",
]
