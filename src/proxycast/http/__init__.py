"""HTTP in front of the routes: the router, the gate, CORS, reading bodies, the loop guard."""
