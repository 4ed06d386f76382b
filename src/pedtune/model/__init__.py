"""Mask R-CNN variants from torchvision and the pretrained weights a run starts from."""
