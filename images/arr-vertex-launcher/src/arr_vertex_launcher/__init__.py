"""The W&B launch agent for Vertex AI, configured from the environment, with spot scheduling."""
