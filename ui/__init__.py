"""The PRO preference explorer (Streamlit), a thin layer over pro_lib. Start it with ``pro ui``."""
