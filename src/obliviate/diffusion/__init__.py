"""The diffusion modality: labelled images, class- and prompt-conditional denoisers, DDPM
training, DDIM sampling with classifier-free guidance, concept-erasure methods, a classifier
judge, metrics and attacks.

Importing :mod:`obliviate.diffusion.methods` registers the methods and
:mod:`obliviate.diffusion.attacks` the attacks in the core registries. Nothing here imports
:mod:`obliviate.llm`.
"""

MODALITY = "diffusion"
