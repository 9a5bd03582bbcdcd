"""Methods: one file each. Fine-tuning methods are losses for the one training loop
(replication.train); inference-time methods are samplers over replication.diffusion."""
