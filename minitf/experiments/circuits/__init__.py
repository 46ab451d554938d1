"""The circuits family: where in-context learning comes from and which heads carry it.

``induction`` trains on repeated random tokens and follows the induction circuit's formation (head
scores over training and positions, ablation against random heads); ``bursty`` trains on bursty
class sequences (Chan et al. 2022) and measures in-context vs in-weights learning and its label
studies; ``plots`` draws both.
"""
