// Placeholder: implemented on the sandbox branches.
