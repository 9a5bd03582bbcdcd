"""What the stages run, as plain functions a script or a test can call too: the base model's pretraining, the CLIP
and learned reward models' training, and the NFE sweep of Fig. 5. Above the training loop and the evaluation,
below the stages."""
