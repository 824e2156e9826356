"""The CNI node agent: serves the plugin (`server`), programs pod netns (`cni_plugin.redirect`)."""
