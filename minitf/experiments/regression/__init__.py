"""The regression family: which algorithm in-context regression runs.

``regression`` trains on in-context linear regression prompts (Garg et al. 2022; Raventós et al.
2023 task diversity) beside the classic learners; ``icl_gd`` compares linear self-attention with
gradient descent (von Oswald et al. 2023); ``plots`` draws both.
"""
