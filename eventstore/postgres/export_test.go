package postgres

// GroupState reports how many group statements run and how many Appends
// wait for one (group.go).
func GroupState(s *Store) (running, queued int) {
	s.group.mu.Lock()
	defer s.group.mu.Unlock()
	return s.group.running, len(s.group.queue)
}
