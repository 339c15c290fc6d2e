"""Deliberation as plain functions: sources and quote verification, negation, embeddings, claim clusters,
the weighted vote, claim building, reconciliation, adjudication and the verdict. No I/O beyond model calls
made through ``council.calls``; the pipeline wires these functions into a graph."""
