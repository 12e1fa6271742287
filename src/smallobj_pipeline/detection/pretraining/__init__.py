"""Pretraining without downloads: a backbone pretrained as a classifier on in-domain crops."""
