// Command flotilla runs Flotilla's roles (dev, web, api, worker) and admin
// commands with the built-in tasks. Build your own main with package flotilla
// to add handlers.
package main

import "github.com/flotilla/flotilla"

func main() {
	flotilla.New().Main()
}
