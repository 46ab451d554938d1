"""The Bayesian family: in-context learning beside the ideal learner of its world.

``ginc`` trains on GINC's mixture of HMM concepts (Xie et al. 2021) with the document-Bayes
reference; ``metalearn`` compares in-context learning with trained meta-learners and the Bayes-optimal
classifier; ``plots`` draws both.
"""
