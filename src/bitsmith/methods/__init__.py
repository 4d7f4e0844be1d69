"""bitsmith.methods (see DESIGN.md); filled by later issues."""
