"""Engine: training. ``loop`` is the training loop (``TrainerBase``: epochs of steps, hooks
around them) and ``hooks`` its hooks (learning-rate steps, validation, best/last checkpoints,
early stopping, divergence guard, signal stop, progress); ``trainer`` trains a detector on it;
``schedule`` builds torch's learning-rate schedulers; ``runtime`` seeds, builds the per-epoch
loader, places a run on processes and GPUs and sets up DistributedDataParallel; ``gpu_claim``
hands free GPUs to concurrent runs; ``elastic`` launches the DDP workers from the training node;
``config`` declares the training settings; ``experiment`` resolves one declared experiment and
trains/evaluates it; ``launch`` is the ``torchrun`` entry point; ``registry`` keeps the champion
model for retraining.
"""
