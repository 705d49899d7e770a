"""LLM self-improvement trainers on any ``AutoModelForCausalLM``: a shared rollout/reward/optimiser
core (``rollout``, ``rewards``, ``objectives``, ``driver``) and one file per recipe."""

from .bstar import BSTaRConfig, BSTaRTrainer
from .driver import IterationReport, IterativeConfig, IterativeTrainer, Round
from .objectives import DPOObjective, GRPOObjective, SFTObjective, group_advantages
from .rewards import (
    CallableReward,
    MajorityVoteReward,
    OutcomeReward,
    ProcessReward,
    Reward,
    SelfJudgeReward,
    VerifierReward,
)
from .rest_em import ReSTEMConfig, ReSTEMTrainer
from .rollout import Rollout, SamplingParams, generate_rollouts
from .score import SCoReConfig, SCoReTrainer
from .self_reward_dpo import SelfRewardDPOConfig, SelfRewardDPOTrainer
from .star import STaRConfig, STaRTrainer

__all__ = [
    "BSTaRConfig",
    "BSTaRTrainer",
    "CallableReward",
    "DPOObjective",
    "GRPOObjective",
    "IterationReport",
    "IterativeConfig",
    "IterativeTrainer",
    "MajorityVoteReward",
    "OutcomeReward",
    "ProcessReward",
    "ReSTEMConfig",
    "ReSTEMTrainer",
    "Reward",
    "Rollout",
    "Round",
    "SCoReConfig",
    "SCoReTrainer",
    "SFTObjective",
    "STaRConfig",
    "STaRTrainer",
    "SamplingParams",
    "SelfJudgeReward",
    "SelfRewardDPOConfig",
    "SelfRewardDPOTrainer",
    "VerifierReward",
    "generate_rollouts",
    "group_advantages",
]
