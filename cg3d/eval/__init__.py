"""Zero-shot, retrieval, fine-tuning / linear probe, scene query, benchmark readers, plots."""
