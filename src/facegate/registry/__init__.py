"""Registry operations over a collection: bulk enrolment from a manifest and whole-collection
de-duplication. Both are purpose-bound like identification and run as resumable jobs whose
state lives in the gallery database, so the CLI and every ``facegate serve`` process share it."""
