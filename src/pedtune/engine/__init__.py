"""Training and scoring one configuration (``fit``), COCO evaluation, memory hand-back, the time estimate."""
