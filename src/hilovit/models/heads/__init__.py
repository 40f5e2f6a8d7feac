"""Dense-prediction parts that sit on a backbone: the FPN neck and the task heads
(Semantic FPN decoder, RetinaNet head, RPN and RoI heads)."""
