"""``pedtune predict``: a kept or registered model on new images, to COCO results and overlay pictures."""
