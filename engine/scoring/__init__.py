"""MedQ-Bench-compatible scoring: MCQ answer extraction and accuracy, calibration, predictive
entropy, description judging on the four MedQ-Bench dimensions, paired comparisons, and the
results tables. Pure: no I/O (the LLM judge takes its transport as a callable)."""
from medq.engine.scoring.description import (
    DIMENSIONS,
    DescriptionJudge,
    DescriptionReference,
    DescriptionScores,
    PairedReference,
    aggregate_descriptions,
    extract_comparison,
    extract_verdict,
    paired_quality_accuracy,
    quality_accuracy,
    reference_text,
)
from medq.engine.scoring.evaluation import (
    EvalItem,
    EvalResult,
    description_rows,
    eval_id_for,
    mcq_rows,
    paired_rows,
    summarize,
)
from medq.engine.scoring.findings import Findings, Mention, analyze
from medq.engine.scoring.llm_judge import JudgeEndpointError, LLMJudge, build_prompt, parse_score
from medq.engine.scoring.mcq import (
    MCQResult,
    ScoringError,
    accuracy_report,
    ece_from_probs,
    expected_calibration_error,
    extract_answer,
    gold_letter,
    match_option_text_letter,
    normalized_entropy,
)
from medq.engine.scoring.report import results_markdown, results_tables
from medq.engine.scoring.rules_judge import RulesJudge, implied_verdicts

__all__ = [
    "DIMENSIONS", "DescriptionJudge", "DescriptionReference", "DescriptionScores",
    "EvalItem", "EvalResult", "Findings", "JudgeEndpointError", "LLMJudge", "MCQResult",
    "Mention", "PairedReference", "RulesJudge", "ScoringError", "accuracy_report",
    "aggregate_descriptions", "analyze", "build_prompt", "description_rows", "ece_from_probs",
    "eval_id_for", "expected_calibration_error", "extract_answer", "extract_comparison",
    "extract_verdict", "gold_letter", "implied_verdicts", "match_option_text_letter",
    "mcq_rows", "normalized_entropy", "paired_quality_accuracy", "paired_rows", "parse_score",
    "quality_accuracy", "reference_text", "results_markdown", "results_tables", "summarize",
]
