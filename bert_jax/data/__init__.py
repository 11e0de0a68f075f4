"""Input data for pretraining and fine-tuning: sources, instance creation, masking, batch features."""
