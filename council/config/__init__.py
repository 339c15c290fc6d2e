"""Configuration: settings files, task policies, the model catalog, panel qualification, local models.

The lowest layer of council: it imports nothing from the layers above (calls, deliberation, store,
provenance, pipeline, batch, cli).
"""
