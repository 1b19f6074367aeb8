"""Language-model nodes: the rules brain now; OpenAI / Azure OpenAI and the model router later."""
