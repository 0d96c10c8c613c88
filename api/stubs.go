package api

func (s *Server) subscriptionRoutes() {}
func (s *Server) keyRoutes()          {}

func serviceProblem(err error) (problem, bool) { return problem{}, false }
