"""Ray Serve application: the prediction API (ingress), the model deployment and the app builder."""
