<?php

/*
 * config/broadcasting.php for a Laravel app broadcasting through pusher-compat.
 *
 * Copy over your app's file (or merge the `pusher` and `reverb` connections into it), and the
 * matching lines of .env.example into your .env. Both connections use the Pusher HTTP API,
 * which pusher-compat serves at http(s)://PUSHER_HOST:PUSHER_PORT/apps/{app_id}/.
 *
 * Laravel 11+ reads BROADCAST_CONNECTION; older versions BROADCAST_DRIVER.
 */

return [

    'default' => env('BROADCAST_CONNECTION', env('BROADCAST_DRIVER', 'null')),

    'connections' => [

        // BROADCAST_CONNECTION=pusher: the stock Pusher driver, pointed at pusher-compat.
        'pusher' => [
            'driver' => 'pusher',
            'key' => env('PUSHER_APP_KEY'),
            'secret' => env('PUSHER_APP_SECRET'),
            'app_id' => env('PUSHER_APP_ID'),
            'options' => [
                'cluster' => env('PUSHER_APP_CLUSTER', 'mt1'),
                'host' => env('PUSHER_HOST', '127.0.0.1'),
                'port' => env('PUSHER_PORT', 6001),
                'scheme' => env('PUSHER_SCHEME', 'http'),
                'encrypted' => true,
                'useTLS' => env('PUSHER_SCHEME', 'http') === 'https',
            ],
            'client_options' => [
                // Guzzle options, e.g. 'verify' => false for a self-signed certificate.
            ],
        ],

        // BROADCAST_CONNECTION=reverb: Reverb's driver is the Pusher driver underneath, so it
        // talks to pusher-compat unchanged (no need to run `php artisan reverb:start`).
        'reverb' => [
            'driver' => 'reverb',
            'key' => env('REVERB_APP_KEY'),
            'secret' => env('REVERB_APP_SECRET'),
            'app_id' => env('REVERB_APP_ID'),
            'options' => [
                'host' => env('REVERB_HOST', '127.0.0.1'),
                'port' => env('REVERB_PORT', 6001),
                'scheme' => env('REVERB_SCHEME', 'http'),
                'useTLS' => env('REVERB_SCHEME', 'http') === 'https',
            ],
            'client_options' => [],
        ],

        'log' => [
            'driver' => 'log',
        ],

        'null' => [
            'driver' => 'null',
        ],

    ],

];
