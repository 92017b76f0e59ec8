"""A small, real training job for the arr-trainer image: a texture adapter on synthetic textures."""
