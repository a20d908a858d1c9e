"""The generative student's plain-Python core, shared by training and the TensorRT-LLM Triton ensemble.

``prompt`` builds the chat prompt (the query as a delimited data block) and the training target;
``parse`` turns a generation back into an :class:`~services.domain.Understanding`, finding
span offsets in the query; ``batching`` holds the tensor plumbing of the Triton Python models.
The ``triton_models/qu_student_trtllm_*`` model.py files import these modules, so everything they
decide is unit-tested on CPU without Triton or TensorRT-LLM.
"""
