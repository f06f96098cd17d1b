"""Evaluation harness: any model as a search agent on held-out questions, scored and tabulated."""
