"""Detection operators in plain PyTorch: boxes, anchors, NMS, RoIAlign (``torchvision.ops`` when it imports)."""
