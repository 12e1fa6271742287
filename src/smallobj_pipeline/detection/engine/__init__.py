"""Engine: training. ``trainer`` is the training loop, ``experiment`` resolves one declared
experiment and trains/evaluates it, ``launch`` is the ``torchrun`` entry point, ``registry`` keeps
the champion model for retraining.
"""
