"""Rewards behind one protocol: ``reward(images, prompts) -> Tensor[B]`` (images in [0, 1], batched).

| name          | paper's reward            | tiny world (trained by a stage)               | paper scale                     |
|---------------|---------------------------|-----------------------------------------------|---------------------------------|
| clip          | CLIP ViT-L/14, 100 x cos  | tiny CLIP (stage clip)                        | openai/clip-vit-large-patch14   |
| compositional | IterComp reward           | CLIP + Bradley-Terry on parser-judged pairs   | IterComp-style BLIP checkpoint  |
| image_reward  | ImageReward v1.0          | CLIP + Bradley-Terry on the rater's choices   | THUDM/ImageReward (BLIP)        |
| aesthetic     | LAION aesthetic predictor | MLP on tiny-CLIP embeddings, rater's ratings  | LAION MLP on CLIP ViT-L/14      |
| mllm          | GPT-4o, 5-aspect rubric   | local grader over the chat-completions API    | any OpenAI-compatible endpoint  |

``registry.load_reward("clip")`` or a weighted mix ``load_reward("clip:0.5,aesthetic:0.5")``. Each name
reads the model folder its stage writes under ``models/`` (trained here in the tiny world,
downloaded from the hub at paper scale); ``sources={"clip": "openai/clip-vit-large-patch14"}``
points a name at another folder or hub id.
"""
