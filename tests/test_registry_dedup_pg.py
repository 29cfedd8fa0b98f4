"""The de-duplication library tests again on PostgreSQL (the session's embedded server, a fresh
database per test): the same tables, cascades on erasure, change feed and audit log."""

from __future__ import annotations

import pytest

import pg_support
from test_registry_dedup import (  # noqa: F401  (fixtures and tests, run here on PostgreSQL)
    clock,
    g,
    test_a_cancelled_run_keeps_no_pairs_and_a_resumed_job_closes_its_interrupted_run,
    test_a_subject_without_consent_for_the_purpose_never_appears,
    test_erasure_removes_the_subject_from_every_stored_finding,
    test_full_run_finds_exactly_the_pairs_exact_scoring_finds,
    test_incremental_run_after_the_change_feed_was_pruned_takes_the_subjects_created_since,
    test_incremental_run_searches_only_new_subjects_against_everyone,
    test_plan_counts_only_consenting_subjects_and_refuses_over_the_limit,
    test_real_photos_two_enrolments_of_one_person_are_found,
    test_review_hides_the_cluster_is_audited_and_survives_reruns,
)


@pytest.fixture(autouse=True)
def _postgres(monkeypatch):
    url = pg_support.fresh_database()
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.setenv("FACEGATE_STORE", url)
    yield
    pg_support.drop_database(url)


def test_the_store_is_postgresql(g):  # noqa: F811 - the imported fixture
    assert g.store.dialect == "postgresql"
