"""The pipeline: typed state and the LangGraph wiring compiled from a recipe, and the ``Council`` API that
runs it (``council.pipeline.engine``)."""
