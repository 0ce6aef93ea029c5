"""ESFP-RM, the explanation-then-slot-prediction judge: stage 1 explains (:mod:`._explain`), stage 2 reads a verbalizer
word at a masked LM's slot (:mod:`._readers`, token assembly in :mod:`._encode`); :class:`SlotJudge` puts them behind
:class:`cerm.RewardJudge`. The texts and formulas shared with training live in :mod:`cerm.protocol._slot`."""

from cerm._slot._encode import SlotInput
from cerm._slot._explain import BackendExplainer, CermExplainer, Explained, Explainer
from cerm._slot._judge import SlotJudge, SlotJudgeConfig, slot_judge_from_config, slot_reader_from_config
from cerm._slot._readers import CausalSlotReader, MaskedSlotReader, SlotFailure, SlotRead, SlotReader

__all__ = [
    "BackendExplainer",
    "CausalSlotReader",
    "CermExplainer",
    "Explained",
    "Explainer",
    "MaskedSlotReader",
    "SlotFailure",
    "SlotInput",
    "SlotJudge",
    "SlotJudgeConfig",
    "SlotRead",
    "SlotReader",
    "slot_judge_from_config",
    "slot_reader_from_config",
]
