"""Errors of whole-collection de-duplication; each maps to a CLI exit code and an HTTP problem
through its ``code`` and ``http_status`` like every gallery error."""

from __future__ import annotations

from ..gallery.errors import ConflictError, GalleryError, NotFoundError

__all__ = ["ClusterNotFoundError", "DedupRunNotFoundError", "ExpectedFalsePairsError", "NoPreviousRunError"]


class ExpectedFalsePairsError(GalleryError):
    """The run would produce more expected false pairs (pairs compared × FMR) than the limit
    allows. Choose a lower FMR, or raise the limit explicitly (``max_expected_false_pairs``)
    knowing that every false pair is a person a reviewer must clear by hand."""

    code = "expected_false_pairs_over_limit"
    http_status = 422


class NoPreviousRunError(ConflictError):
    """An incremental run continues a completed run of the same collection, purpose and FMR;
    there is none yet: run a full de-duplication first."""

    code = "no_previous_dedup_run"


class DedupRunNotFoundError(NotFoundError):
    code = "dedup_run_not_found"


class ClusterNotFoundError(NotFoundError):
    """No cluster with this key among the collection's current de-duplication findings."""

    code = "cluster_not_found"
