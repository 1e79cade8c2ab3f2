"""`obliviate attack`'s table keeps its columns for any model name."""

from __future__ import annotations

from obliviate.cli.main import format_attacks


def test_a_long_model_name_keeps_the_columns_aligned():
    row = {"plain": 0.5, "attacked": 0.25, "oracle_attacked": 0.125, "recovery": 0.125,
           "metric": "accuracy"}
    long_metric = {**row, "metric": "pairwise_accuracy_of_a_long_probe"}
    lines = format_attacks({"target": {"embedding": row},
                            "unlearned/concept_ablation_long_name": {
                                "relearning_with_a_long_name": long_metric}})
    header, *rows = lines.splitlines()
    for name, firsts in (("attack", ["embedding", "relearning_with_a_long_name"]),
                         ("metric", ["accuracy", "pairwise_accuracy_of_a_long_probe"])):
        column = header.index(name)
        assert [r[column:].split()[0] for r in rows] == firsts
    assert len({len(r) for r in [header, *rows]}) == 1  # every numeric column ends together
    assert rows[1].split()[-4:] == ["0.500", "0.250", "0.125", "+0.125"]
