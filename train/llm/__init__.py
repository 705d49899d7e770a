"""LLM self-improvement trainers on any ``AutoModelForCausalLM``: a shared rollout/reward/optimiser
core (``rollout``, ``rewards``, ``objectives``, ``driver``) and one file per recipe."""

from .bstar import BSTaRConfig, BSTaRTrainer
from .cct import CCTConfig, CCTTrainer
from .co_reward import CoRewardConfig, CoRewardTrainer
from .critique import CritiqueConfig, CritiqueTrainer, critique_refine
from .driver import IterationReport, IterativeConfig, IterativeTrainer, Round
from .expo import ExPOConfig, ExPOTrainer
from .exploratory_iteration import ExItConfig, ExItTrainer
from .grpo import GRPOConfig, GRPOTrainer
from .iterative_deepening import iterative_deepening
from .laser import LaSeRConfig, LaSeRTrainer
from .objectives import DPOObjective, GRPOObjective, SFTObjective, group_advantages
from .prompts import ChatTemplateFormat, PromptFormat, get_prompt_format, prepare_tokenizer
from .rewards import (
    CallableReward,
    FunctionReward,
    MajorityVoteReward,
    OutcomeReward,
    ProcessReward,
    Reward,
    SelfJudgeReward,
    VerifierReward,
    answer_key,
    canonical_answer,
    majority_answer,
)
from .rest_em import ReSTEMConfig, ReSTEMTrainer
from .rest_mcts import ReSTMCTSConfig, ReSTMCTSTrainer
from .rollout import Rollout, SamplingParams, generate_rollouts
from .revision import CriticFeedback, Episode, VerifierFeedback, no_feedback, sample_revisions
from .rlccf import RLCCFConfig, RLCCFTrainer
from .s3c import S3cConfig, S3cTrainer
from .score import SCoReConfig, SCoReTrainer
from .scl import SCLConfig, SCLTrainer
from .self_prm import SelfPRMConfig, SelfPRMTrainer, self_rerank
from .self_reward_dpo import SelfRewardDPOConfig, SelfRewardDPOTrainer
from .spiral import SPIRALConfig, SPIRALTrainer
from .spc import SPCConfig, SPCTrainer
from .star import STaRConfig, STaRTrainer

__all__ = [
    "BSTaRConfig",
    "BSTaRTrainer",
    "CCTConfig",
    "CCTTrainer",
    "CallableReward",
    "ChatTemplateFormat",
    "CoRewardConfig",
    "CoRewardTrainer",
    "CriticFeedback",
    "CritiqueConfig",
    "CritiqueTrainer",
    "DPOObjective",
    "Episode",
    "ExPOConfig",
    "ExPOTrainer",
    "ExItConfig",
    "ExItTrainer",
    "FunctionReward",
    "GRPOConfig",
    "GRPOObjective",
    "GRPOTrainer",
    "IterationReport",
    "IterativeConfig",
    "IterativeTrainer",
    "LaSeRConfig",
    "LaSeRTrainer",
    "MajorityVoteReward",
    "OutcomeReward",
    "ProcessReward",
    "PromptFormat",
    "RLCCFConfig",
    "RLCCFTrainer",
    "ReSTEMConfig",
    "ReSTEMTrainer",
    "ReSTMCTSConfig",
    "ReSTMCTSTrainer",
    "Reward",
    "Rollout",
    "Round",
    "SCLConfig",
    "SCLTrainer",
    "S3cConfig",
    "S3cTrainer",
    "SCoReConfig",
    "SCoReTrainer",
    "SFTObjective",
    "SPCConfig",
    "SPCTrainer",
    "SPIRALConfig",
    "SPIRALTrainer",
    "STaRConfig",
    "STaRTrainer",
    "SamplingParams",
    "SelfJudgeReward",
    "SelfPRMConfig",
    "SelfPRMTrainer",
    "SelfRewardDPOConfig",
    "SelfRewardDPOTrainer",
    "VerifierFeedback",
    "VerifierReward",
    "answer_key",
    "canonical_answer",
    "critique_refine",
    "generate_rollouts",
    "get_prompt_format",
    "group_advantages",
    "iterative_deepening",
    "majority_answer",
    "no_feedback",
    "prepare_tokenizer",
    "sample_revisions",
    "self_rerank",
]
