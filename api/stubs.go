package api

func (s *Server) keyRoutes() {}
